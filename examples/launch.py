"""POST /model/launch: download (if needed) and start a model."""
from _common import parser, session, show

p = parser(__doc__)
p.add_argument("model_name")
p.add_argument("--n-ctx", type=int, default=-1, help="context size in tokens (-1: the model's default)")
args = p.parse_args()
show(session(args).post(f"{args.url}/model/launch", json={"model_name": args.model_name, "n_ctx": args.n_ctx}))
