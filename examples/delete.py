"""DELETE /model/delete: stop a model and delete its downloaded files and its chats."""
from _common import parser, session, show

p = parser(__doc__)
p.add_argument("model_name")
args = p.parse_args()
show(session(args).delete(f"{args.url}/model/delete", json={"model_name": args.model_name}))
