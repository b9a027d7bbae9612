"""POST /chat/addsystemprompt: set or replace a chat's system prompt."""
from _common import parser, session, show

p = parser(__doc__)
p.add_argument("model_name")
p.add_argument("system_prompt")
p.add_argument("--chat-id", default="default")
args = p.parse_args()
show(session(args).post(f"{args.url}/chat/addsystemprompt", json={
    "model_name": args.model_name, "system_prompt": args.system_prompt, "chat_id": args.chat_id}))
