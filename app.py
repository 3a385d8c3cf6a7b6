"""dldl demo: every face in a photo with its age *distribution*.

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
from dldl_core.plots import age_chart, annotate_faces
from dldl_core.predict import AgePredictor, FacePipeline

MAX_CHARTS = 6
_pipeline: FacePipeline | None = None
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


def pipeline() -> FacePipeline:
    """Load the models once, on first use, and share them between requests."""
    global _pipeline
    with _lock:
        if _pipeline is None:
            _pipeline = FacePipeline(AgePredictor(device=_device))
        return _pipeline


def analyze_faces(path: str | None):
    """Photo -> (annotated photo, age charts, table, JSON file, status line)."""
    if not path:
        raise gr.Error("Upload a photo first.")
    try:
        image = load_image(path)
    except ImageReadError as exc:
        raise gr.Error(f"Could not read that file: {str(exc).split(': ', 1)[-1]}") from exc
    try:
        faces = pipeline().analyze(image)
    except WeightsError as exc:
        raise gr.Error(str(exc)) from exc
    rows = [[i + 1, f["age"]["mean"], f["age"]["mode"], f["age"]["std"], f"{f['age']['interval'][0]:.0f}-{f['age']['interval'][1]:.0f}", f["score"]] for i, f in enumerate(faces)]
    result = {"path": Path(path).name, "size": list(image.size), "faces": faces}
    out = Path(tempfile.mkdtemp()) / "faces.json"
    out.write_text(json.dumps(result))
    if not faces:
        status = "No face found in this photo."
    else:
        status = f"{len(faces)} face{'s' * (len(faces) > 1)} found."
        if len(faces) > MAX_CHARTS:
            status += f" Charts show the first {MAX_CHARTS}; the table and the JSON have all of them."
    return annotate_faces(image, faces), age_chart(faces, MAX_CHARTS), rows, str(out), status


def build() -> gr.Blocks:
    with gr.Blocks(title="dldl: label distributions") as demo:
        gr.Markdown(
            "# Deep Label Distribution Learning\n"
            "Each face gets an age **distribution**, not just a number: the expected age, "
            "and the range that holds 80% of the probability."
        )
        with gr.Tab("Faces"):
            with gr.Row():
                with gr.Column(scale=1):
                    photo = PhotoInput(type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"], label="Photo")
                    run = gr.Button("Analyze", variant="primary")
                    gr.Examples([[str(p)] for p in example_photos().values()], inputs=[photo])
                with gr.Column(scale=2):
                    status = gr.Markdown()
                    annotated = gr.Image(label="Faces", type="pil", format="jpeg", elem_id="annotated")
                    chart = gr.Plot(label="Age distributions", elem_id="age-chart")
                    table = gr.Dataframe(
                        headers=["face", "expected age", "most likely", "std", "80% interval", "detector score"],
                        label="Numbers",
                    )
                    download = gr.File(label="Full result (JSON)")
            outputs = [annotated, chart, table, download, status]
            run.click(analyze_faces, photo, outputs, api_name="analyze_faces")
            photo.upload(analyze_faces, photo, outputs, api_name=False)
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
