// Photos for vision models: shrunk on the phone to at most 1024 px JPEG (EXIF orientation applied),
// so a 6 MB camera photo costs about 150 KB of upload. Previews are the canvases themselves.
import { $, el, notify } from "./util.js";

const LONGEST = 1024;
const QUALITY = 0.85;

export async function shrink(file) {
  const image = await createImageBitmap(file, { imageOrientation: "from-image" });
  const width = image.width;
  const height = image.height;
  const scale = Math.min(1, LONGEST / Math.max(width, height));
  const canvas = el("canvas", "thumb");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
  image.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", QUALITY));
  if (!blob) throw new Error("could not encode");
  return { canvas, blob };
}

export class PhotoTray {
  constructor() {
    this.photos = [];
    for (const id of ["camera", "gallery"]) {
      const input = $(id);
      input.addEventListener("change", async () => {
        for (const file of input.files) await this.add(file);
        input.value = "";
      });
    }
  }

  async add(file) {
    try {
      const photo = await shrink(file);
      this.photos.push(photo);
      this.render();
    } catch {
      notify(`${file.name || "This photo"} could not be read as an image.`);
    }
  }

  put(photos) {
    this.photos.push(...photos);
    this.render();
  }

  take() {
    const photos = this.photos;
    this.photos = [];
    this.render();
    return photos;
  }

  render() {
    const tray = $("thumbs");
    tray.replaceChildren(...this.photos.map((photo, i) => {
      const item = el("figure", "photo");
      const remove = el("button", "remove", "\u00d7");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove photo ${i + 1}`);
      remove.addEventListener("click", () => {
        this.photos.splice(this.photos.indexOf(photo), 1);
        this.render();
      });
      item.append(photo.canvas, remove);
      return item;
    }));
  }
}
