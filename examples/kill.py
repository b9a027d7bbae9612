"""DELETE /model/kill: stop a running model and free its memory."""
from _common import parser, session, show

p = parser(__doc__)
p.add_argument("model_name")
args = p.parse_args()
show(session(args).delete(f"{args.url}/model/kill", json={"model_name": args.model_name}))
