"""DELETE /chat/clearchat: forget a chat's turns (the system prompt stays)."""
from _common import parser, session, show

p = parser(__doc__)
p.add_argument("model_name")
p.add_argument("--chat-id", default="default")
args = p.parse_args()
show(session(args).delete(f"{args.url}/chat/clearchat", json={"model_name": args.model_name, "chat_id": args.chat_id}))
