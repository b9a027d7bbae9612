"""POST /generate/fromimagetext: ask a vision model about image files and links (multipart), streamed."""
from contextlib import ExitStack
from pathlib import Path

from _common import parser, session, stream

p = parser(__doc__)
p.add_argument("model_name")
p.add_argument("prompt")
p.add_argument("--file", action="append", default=[], help="an image file to upload (repeat for more)")
p.add_argument("--link", action="append", default=[], help="an http(s) or data: image link (repeat for more)")
p.add_argument("--max-new-tokens", type=int, default=512)
p.add_argument("--chat-id", default="default")
args = p.parse_args()
url, client = f"{args.url}/generate/fromimagetext", session(args)
body = {"model_name": args.model_name, "prompt": args.prompt, "max_new_tokens": args.max_new_tokens,
        "chat_id": args.chat_id, "image_links": args.link}
if not args.file:  # links only: JSON (links may also be data:image/...;base64, URIs)
    stream(client.post(url, json=body, stream=True))
else:  # uploads go as multipart, with the links as repeated form fields
    with ExitStack() as files:
        uploads = [("image_files", (Path(f).name, files.enter_context(open(f, "rb")))) for f in args.file]
        stream(client.post(url, data={**body, "max_new_tokens": str(args.max_new_tokens)}, files=uploads,
                           stream=True))
