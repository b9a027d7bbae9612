"""GET /model/getactive: the names of the running models."""
from _common import parser, session, show

args = parser(__doc__).parse_args()
show(session(args).get(f"{args.url}/model/getactive"))
