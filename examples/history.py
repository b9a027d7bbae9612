"""GET /chat/getchathistory: a chat so far, with its system prompt."""
from _common import parser, session, show

p = parser(__doc__)
p.add_argument("model_name")
p.add_argument("--chat-id", default="default")
args = p.parse_args()
show(session(args).get(f"{args.url}/chat/getchathistory", params={"model_name": args.model_name,
                                                                   "chat_id": args.chat_id}))
