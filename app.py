"""dldl demo: every face in a photo with its age and head-pose *distributions*.

Run ``python app.py`` (http://127.0.0.1:7860); the same file runs as a Hugging Face Space.
The app only calls ``dldl_core`` and formats what comes back.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path

import gradio as gr

from dldl_core.checkpoint import WeightsError
from dldl_core.examples import example_photos
from dldl_core.images import ImageReadError, load_image
from dldl_core.plots import age_chart, annotate_faces, class_chart, pose_chart
from dldl_core.predict import WEIGHTS_DIR, AgePredictor, FacePipeline, MultiLabelPredictor, PosePredictor

MAX_CHARTS = 6
_models: dict[str, object] = {}
_lock = threading.Lock()
_device = "auto"


class PhotoInput(gr.Image):
    """``gr.Image`` whose unreadable uploads give a clear message instead of a server error.

    Gradio opens an upload with PIL before the event runs; a file that is not
    an image fails there, outside ``analyze_faces``. ``is_template`` keeps the
    front end's ordinary image widget.
    """

    is_template = True

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise gr.Error("Could not read that file: it is not an image this app can open.") from exc


def _shared(name: str, load):
    """Load a model once, on first use, and share it between requests."""
    with _lock:
        if name not in _models:
            _models[name] = load()
        return _models[name]


def pipeline() -> FacePipeline:
    def load() -> FacePipeline:
        pose = PosePredictor(device=_device) if (WEIGHTS_DIR / "pose.safetensors").exists() else None
        return FacePipeline(AgePredictor(device=_device), pose)

    return _shared("faces", load)


def _read(path: str | None):
    if not path:
        raise gr.Error("Upload a photo first.")
    try:
        return load_image(path)
    except ImageReadError as exc:
        raise gr.Error(f"Could not read that file: {str(exc).split(': ', 1)[-1]}") from exc


def _json_file(name: str, result: dict) -> str:
    out = Path(tempfile.mkdtemp()) / name
    out.write_text(json.dumps(result))
    return str(out)


def analyze_faces(path: str | None):
    """Photo -> (annotated photo, age charts, pose heatmaps, table, JSON file, status line)."""
    image = _read(path)
    try:
        faces = pipeline().analyze(image)
    except WeightsError as exc:
        raise gr.Error(str(exc)) from exc
    rows = [_table_row(i, f) for i, f in enumerate(faces)]
    out = _json_file("faces.json", {"path": Path(path).name, "size": list(image.size), "faces": faces})
    if not faces:
        status = "No face found in this photo."
    else:
        status = f"{len(faces)} face{'s' * (len(faces) > 1)} found."
        if len(faces) > MAX_CHARTS:
            status += f" Charts show the first {MAX_CHARTS}; the table and the JSON have all of them."
    poses = pose_chart(faces, MAX_CHARTS) if not faces or "pose" in faces[0] else None
    return annotate_faces(image, faces), age_chart(faces, MAX_CHARTS), poses, rows, out, status


def analyze_objects(path: str | None):
    """Photo -> (class score chart, the objects named, JSON file)."""
    image = _read(path)
    try:
        model = _shared("objects", lambda: MultiLabelPredictor(device=_device))
    except WeightsError as exc:
        raise gr.Error(str(exc)) from exc
    result = model.predict_images([image])[0]
    named = ", ".join(result["labels"]) or "none of the 20 classes scores above the threshold"
    out = _json_file("objects.json", {"path": Path(path).name, **result})
    return class_chart(result, model.threshold), f"**Objects:** {named}", out


TABLE_HEADERS = ["face", "expected age", "80% interval", "age std", "yaw °", "pitch °", "roll °", "detector score"]


def _table_row(i: int, face: dict) -> list:
    age, pose = face["age"], face.get("pose")
    angles = [pose["yaw"], pose["pitch"], pose["roll"]] if pose else [None] * 3
    return [i + 1, age["mean"], f"{age['interval'][0]:.0f}-{age['interval'][1]:.0f}", age["std"], *angles, face["score"]]


def _photo_column() -> tuple[PhotoInput, gr.Button]:
    """The input side of a tab: the photo (upload, paste or webcam), a button and the example photos."""
    with gr.Column(scale=1):
        photo = PhotoInput(type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"], label="Photo")
        run = gr.Button("Analyze", variant="primary")
        gr.Examples([[str(p)] for p in example_photos().values()], inputs=[photo])
    return photo, run


def build() -> gr.Blocks:
    with gr.Blocks(title="dldl: label distributions") as demo:
        gr.Markdown(
            "# Deep Label Distribution Learning\n"
            "Each face gets an age **distribution**, not just a number (the expected age and the range "
            "that holds 80% of the probability), and a joint yaw x pitch **distribution** of its head pose "
            "(heatmap; head axes drawn on the face: red right, green up, blue nose)."
        )
        with gr.Tab("Faces"):
            with gr.Row():
                photo, run = _photo_column()
                with gr.Column(scale=2):
                    status = gr.Markdown()
                    annotated = gr.Image(label="Faces", type="pil", format="jpeg", elem_id="annotated")
                    chart = gr.Plot(label="Age distributions", elem_id="age-chart")
                    poses = gr.Plot(label="Head pose: yaw x pitch distributions", elem_id="pose-chart")
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="Numbers")
                    download = gr.File(label="Full result (JSON)")
            outputs = [annotated, chart, poses, table, download, status]
            run.click(analyze_faces, photo, outputs, api_name="analyze_faces")
            photo.upload(analyze_faces, photo, outputs, api_name=False)
        if (WEIGHTS_DIR / "multilabel.safetensors").exists():
            with gr.Tab("Objects"):
                gr.Markdown(
                    "Which of the 20 PASCAL VOC classes are in the photo: the model predicts a distribution over "
                    "the classes (objects present share the mass), trained on a few hundred COCO photos."
                )
                with gr.Row():
                    obj_photo, obj_run = _photo_column()
                    with gr.Column(scale=2):
                        obj_named = gr.Markdown()
                        obj_chart = gr.Plot(label="Class distribution", elem_id="class-chart")
                        obj_download = gr.File(label="Full result (JSON)")
                obj_outputs = [obj_chart, obj_named, obj_download]
                obj_run.click(analyze_objects, obj_photo, obj_outputs, api_name="analyze_objects")
                obj_photo.upload(analyze_objects, obj_photo, obj_outputs, api_name=False)
    return demo


def main() -> None:
    global _device
    ap = argparse.ArgumentParser(description="dldl demo app")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = ap.parse_args()
    _device = args.device
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share)


demo = build()

if __name__ == "__main__":
    main()
