"""POST /generate/fromtext: ask a model, and print the answer as it streams."""
from _common import parser, session, stream

p = parser(__doc__)
p.add_argument("model_name")
p.add_argument("prompt")
p.add_argument("--max-new-tokens", type=int, default=512)
p.add_argument("--chat-id", default="default")
args = p.parse_args()
stream(session(args).post(f"{args.url}/generate/fromtext", stream=True, json={
    "model_name": args.model_name, "prompt": args.prompt, "max_new_tokens": args.max_new_tokens,
    "chat_id": args.chat_id}))
