"""dldl demo: every face in a photo with its age and head-pose *distributions*; faces tracked through
a video clip or a live webcam, their evidence fused over time; objects in a photo; a class
distribution for every pixel of a street scene.

Run ``python app.py`` (http://127.0.0.1:7860); the same file runs as a Hugging Face Space.
The app only calls ``dldl_core`` and formats what comes back.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from PIL import Image

from dldl_core.card import Readout
from dldl_core.checkpoint import WeightsError, read_card
from dldl_core.clip import ClipAnalyzer, clip_labels
from dldl_core.examples import example_photos, scene_photos
from dldl_core.images import MAX_PIXELS, ImageReadError, fit_within, load_image
from dldl_core.paths import shipped_weights
from dldl_core.plots import (
    age_chart,
    age_label,
    age_track_chart,
    annotate_faces,
    class_chart,
    pose_chart,
    pose_label,
    seg_overlay,
    uncertainty_image,
)
from dldl_core.predict import BACKEND_HELP, BACKENDS, AgePredictor, FacePipeline, MultiLabelPredictor, PosePredictor, SegPredictor
from dldl_core.video import VideoReadError, VideoWriter, read_video


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Gradio serves requests on worker threads, and glibc gives each thread its own malloc arena
    whose freed memory it keeps: the server's memory then creeps up with traffic (+14% over three
    rounds of ``benchmarks.load``). A few shared arenas keep it flat; elsewhere this does nothing."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 is M_ARENA_MAX
    except (OSError, AttributeError):
        pass


_limit_malloc_arenas()

MAX_CHARTS = 6
MAX_SIDE = 1600  # pictures the app returns are at most this many pixels wide or high
KEEP_OUTPUTS_S = 600  # result files are removed this long after they were last written
MAX_VIDEO_S = 30  # seconds of a clip analysed (the rest is left out, and the status says so)
VIDEO_MAX_SIDE = 960  # clip frames are scaled down to this for analysis and the annotated clip
_models: dict[str, object] = {}
_lock = threading.Lock()
_device = "auto"
_backend = "auto"


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
        except Image.DecompressionBombError as exc:
            raise gr.Error(f"Could not read that file: the image is too large (over {MAX_PIXELS:,} pixels).") from exc
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
        pose = PosePredictor(device=_device, backend=_backend) if (shipped_weights("pose")).exists() else None
        return FacePipeline(AgePredictor(device=_device, backend=_backend), pose)

    return _shared("faces", load)


def _warm_up() -> None:
    """Load the face models while the app starts, so that the first photo does not wait for them (on
    a CPU the first start also exports them to ONNX, about 20 s). A model that fails to load fails
    again, with its message, on the first request that needs it."""
    with contextlib.suppress(Exception):
        pipeline()


def _read(path: str | None):
    if not path:
        raise gr.Error("Upload a photo first.")
    try:
        return load_image(path)
    except ImageReadError as exc:
        raise gr.Error(f"Could not read that file: {str(exc).split(': ', 1)[-1]}") from exc


class OutputFiles:
    """The files the app hands back (result JSON, pictures), in one folder the app owns.

    Each is named by its content and written under a temporary name, then renamed: concurrent
    requests with the same result share one complete file instead of rewriting it while another
    client downloads it, and nothing is left half-written. Files not written again for
    ``KEEP_OUTPUTS_S`` seconds are removed; the folder goes when the app exits.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dldl-app-"))
        atexit.register(shutil.rmtree, self.folder, True)

    def write(self, name: str, data: bytes) -> str:
        self._prune()
        stem, suffix = os.path.splitext(name)
        path = self.folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:20]}{suffix}"
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # also renews its age
        return str(path)

    def json(self, name: str, result: dict) -> str:
        return self.write(name, json.dumps(result, allow_nan=False).encode())

    def picture(self, name: str, image: Image.Image) -> str:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        return self.write(name, buf.getvalue())

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_OUTPUTS_S
        for path in self.folder.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:  # another request removed it first
                pass


_outputs = OutputFiles()


def analyze_faces(path: str | None):
    """Photo -> (annotated photo, age charts, pose heatmaps, table, JSON file, status line)."""
    image = _read(path)
    try:
        faces = pipeline().analyze(image)
    except WeightsError as exc:
        raise gr.Error(str(exc)) from exc
    rows = [_table_row(i, f) for i, f in enumerate(faces)]
    out = _outputs.json("faces.json", {"path": Path(path).name, "size": list(image.size), "faces": faces})
    if not faces:
        status = "No face found in this photo."
    else:
        status = f"{len(faces)} face{'s' * (len(faces) > 1)} found."
        if len(faces) > MAX_CHARTS:
            status += f" Charts show the first {MAX_CHARTS}; the table and the JSON have all of them."
        status += _unusual_note(faces)
    poses = pose_chart(faces, MAX_CHARTS) if not faces or "pose" in faces[0] else None
    annotated = _outputs.picture("faces.jpg", annotate_faces(image, faces, MAX_SIDE))
    return annotated, age_chart(faces, MAX_CHARTS, AGE_LEVEL), poses, rows, out, status


def _clip_analyzer(every: int = 1) -> ClipAnalyzer:
    try:
        faces = pipeline()
    except WeightsError as exc:
        raise gr.Error(str(exc)) from exc
    return ClipAnalyzer(faces.models.get("age"), faces.models.get("pose"), faces.detector, every=every)


def analyze_video(path: str | None, every: int = 1, progress=gr.Progress()):  # noqa: B008 - Gradio's progress idiom
    """Clip -> (annotated clip, age-over-time chart, JSON file, status line)."""
    if not path:
        raise gr.Error("Upload a video clip first.")
    try:
        info, frames = read_video(path)
    except VideoReadError as exc:
        raise gr.Error(f"Could not read that file: {str(exc).split(': ', 1)[-1]}") from exc
    analyzer = _clip_analyzer(int(every))
    limit = max(1, round(MAX_VIDEO_S * info.fps))
    rows, truncated = [], False
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "faces.mp4"
        writer = None
        try:
            for frame in progress.tqdm(frames, total=min(info.frames, limit) or None, desc="frames", unit="frame"):
                if frame.index >= limit:
                    truncated = True
                    break
                image = fit_within(frame.image, VIDEO_MAX_SIDE)
                writer = writer or VideoWriter(clip, info.fps, image.size)
                row = analyzer.frame(image)
                rows.append({**row, "time": round(frame.time, 3)})
                writer.write(annotate_faces(image, clip_labels(row)))
        except VideoReadError as exc:
            raise gr.Error(f"Could not read that file: {str(exc).split(': ', 1)[-1]}") from exc
        finally:
            if writer:
                writer.close()
        annotated = _outputs.write("faces.mp4", clip.read_bytes())
    tracks = analyzer.tracks()
    out = _outputs.json("video.json", {"path": Path(path).name, "fps": info.fps, "frames": rows, "tracks": tracks})
    status = f"{len(rows)} frames ({len(rows) / info.fps:.1f} s), {len(tracks)} face track{'s' * (len(tracks) != 1)}."
    if truncated:
        status += f" Only the first {MAX_VIDEO_S} s were analysed."
    for t in tracks:
        if "age" in t:
            status += f" #{t['track']}: {age_label(t['age'])} from {t['age']['frames']} frames{_unusual_frames_note(t['age'])}."
    return annotated, age_track_chart(rows, tracks, info.fps, MAX_CHARTS, AGE_LEVEL), out, status


def _unusual_frames_note(fused: dict) -> str:
    """`` (unlike the training faces in 9 of them: ...)`` for a track's fused age when most of its
    frames' faces looked unlike the age model's training faces (``unusual_frames``), else ``""``."""
    odd = fused.get("unusual_frames", 0)
    return f" (unlike the training faces in {odd} of them: the age may be further off)" if 2 * odd > fused["frames"] else ""


def webcam_frame(frame: Image.Image | None, analyzer: ClipAnalyzer | None):
    """One live webcam frame -> (annotated frame, per-track text, the session's analyzer).

    Each browser session keeps its own analyzer in a ``gr.State``, so its tracks fuse only its frames.
    """
    if frame is None:
        return None, "", analyzer
    analyzer = analyzer or _clip_analyzer()
    image = fit_within(frame.convert("RGB"), VIDEO_MAX_SIDE)
    row = analyzer.frame(image)
    lines = []
    for face in row["faces"]:
        line = f"**#{face['track']}**"
        if "age_fused" in face:
            line += f" {age_label(face['age_fused'])} from {face['age_fused']['frames']} frames{_unusual_frames_note(face['age_fused'])}"
        if "pose_filtered" in face:
            line += f"; {pose_label(face['pose_filtered'])}"
        lines.append(line)
    return annotate_faces(image, clip_labels(row)), "  \n".join(lines) or "No face in view.", analyzer


def analyze_objects(path: str | None):
    """Photo -> (class score chart, the objects named, JSON file)."""
    image = _read(path)
    try:
        model = _shared("objects", lambda: MultiLabelPredictor(device=_device, backend=_backend))
    except WeightsError as exc:
        raise gr.Error(str(exc)) from exc
    result = model.predict_images([image])[0]
    named = ", ".join(result["labels"]) or f"none ({result.get('note', 'no class scores above the threshold')})"
    out = _outputs.json("objects.json", {"path": Path(path).name, **result})
    return class_chart(result, model.threshold), f"**Objects:** {named}", out


def analyze_scene(path: str | None, opacity: float):
    """Photo -> (class overlay, uncertainty map, legend, kept maps for the opacity slider, status)."""
    image = fit_within(_read(path), MAX_SIDE)  # the network sees about 480 x 360 pixels anyway
    try:
        model = _shared("scene", lambda: SegPredictor(device=_device, backend=_backend))
    except WeightsError as exc:
        raise gr.Error(str(exc)) from exc
    result = model.predict(image)
    kept = (image, result["classes"], model.colours)
    status = f"Mean uncertainty {result['mean_uncertainty']:.2f} (0 = sure of every pixel, 1 = no idea)."
    overlay = _outputs.picture("scene.jpg", seg_overlay(image, result["classes"], model.colours, opacity))
    return overlay, _outputs.picture("uncertainty.jpg", uncertainty_image(result["uncertainty"])), _legend(model, result["fractions"]), kept, status


def reblend(kept, opacity: float):
    """The overlay again at a new opacity, from the maps already computed (no model run)."""
    if kept is None:
        return None
    image, classes, colours = kept
    return _outputs.picture("scene.jpg", seg_overlay(image, classes, colours, opacity))


def _legend(model: SegPredictor, fractions: dict[str, float]) -> str:
    items = []
    for name, colour in zip(model.classes, model.colours):
        swatch = f"<span style='display:inline-block;width:0.9em;height:0.9em;background:rgb{tuple(colour)};border:1px solid #888;margin-right:0.3em'></span>"
        items.append(f"<span style='margin-right:1.2em;white-space:nowrap'>{swatch}{name} {100 * fractions[name]:.1f}%</span>")
    return "<div id='seg-legend'>" + " ".join(items) + "</div>"




def _age_level() -> float:
    """The mass of the age model's interval, from its card (a broken card is reported when the model loads)."""
    try:
        return read_card(shipped_weights("age")).readout.level
    except WeightsError:
        return Readout().level


AGE_LEVEL = _age_level()
TABLE_HEADERS = ["face", "expected age", f"{AGE_LEVEL:.0%} interval", "age std", "novelty", "yaw °", "pitch °", "roll °", "detector score"]


def _table_row(i: int, face: dict) -> list:
    age, pose = face["age"], face.get("pose")
    angles = [pose["yaw"], pose["pitch"], pose["roll"]] if pose else [None] * 3
    return [i + 1, age["mean"], f"{age['interval'][0]:.0f}-{age['interval'][1]:.0f}", age["std"], age.get("novelty"), *angles, face["score"]]


def _unusual_note(faces: list[dict]) -> str:
    """A warning naming the faces unlike the age model's training faces (the readouts' ``unusual``)."""
    odd = [str(i + 1) for i, f in enumerate(faces) if f["age"].get("unusual")]
    if not odd:
        return ""
    which = f"Face #{odd[0]} looks" if len(odd) == 1 else f"Faces #{', #'.join(odd)} look"
    return f" {which} unlike the faces the age model learned from: the age may be further off than its range says."


def _photo_column(examples: dict[str, Path]) -> tuple[PhotoInput, gr.Button]:
    """The input side of a tab: the photo (upload, paste or webcam), a button and example photos."""
    with gr.Column(scale=1):
        photo = PhotoInput(type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"], label="Photo")
        run = gr.Button("Analyze", variant="primary")
        gr.Examples([[str(p)] for p in examples.values()], inputs=[photo])
    return photo, run


def _on_photo(photo: PhotoInput, run: gr.Button, fn: Callable, inputs: list, outputs: list) -> None:
    """Run ``fn`` from the button and as soon as a photo is uploaded; the button's event is the API
    endpoint, named after ``fn``."""
    run.click(fn, inputs, outputs, api_name=fn.__name__)
    photo.upload(fn, inputs, outputs, api_name=False)


def build() -> gr.Blocks:
    # Gradio's own copies of the result files are swept as ours are.
    with gr.Blocks(title="dldl: label distributions", delete_cache=(KEEP_OUTPUTS_S, KEEP_OUTPUTS_S)) as demo:
        gr.Markdown(
            "# Deep Label Distribution Learning\n"
            "Predictions are **distributions**, not just numbers. **Faces:** each face's age distribution "
            f"(the expected age and the range that holds {AGE_LEVEL:.0%} of the probability) and a joint yaw x pitch "
            "distribution of its head pose (heatmap; head axes drawn on the face: red right, green up, blue nose). "
            "The age model learned from UTKFace's face chips, with JPEG, blur, low resolution, noise and lighting "
            "simulated in training; each face is read in color and in gray, through a slight blur, by two networks of "
            "different design (MobileNetV2 and EfficientNet-Lite0), so that image quality and sharpening are not read as "
            "age (the second also saw plain strips at a crop's edges in training, as a backdrop or a padded photo "
            "puts them), with a third, dlib's CC0 age network trained on other photos, as a second opinion at a tenth "
            "of the weight; on photos unlike those faces it errs more "
            "(older people tend to be read too young), so read the range, not just the number; a face far from "
            "every training face is marked unlike them (novelty in the table); the more unlike, the wider its range is drawn, "
            "but its age may still be further off than the range says. "
            "**Video:** faces tracked through a clip (or live from a webcam, under the Faces tab), each person's "
            "age evidence pooled over the frames and head pose filtered. "
            "**Objects:** a distribution over 20 object classes. **Street scene:** a class distribution for "
            "every pixel, and where the model is unsure."
        )
        with gr.Tab("Faces"):
            with gr.Row():
                photo, run = _photo_column(example_photos())
                with gr.Column(scale=2):
                    status = gr.Markdown()
                    annotated = gr.Image(label="Faces", type="filepath", elem_id="annotated")
                    chart = gr.Plot(label="Age distributions", elem_id="age-chart")
                    poses = gr.Plot(label="Head pose: yaw x pitch distributions", elem_id="pose-chart")
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="Numbers")
                    download = gr.File(label="Full result (JSON)")
            _on_photo(photo, run, analyze_faces, [photo], [annotated, chart, poses, table, download, status])
            with gr.Accordion("Live webcam: faces tracked, age fused over the frames, pose filtered", open=False):
                with gr.Row():
                    live = gr.Image(sources=["webcam"], streaming=True, type="pil", label="Webcam")
                    with gr.Column():
                        live_view = gr.Image(label="Tracked faces", elem_id="live-view")
                        live_text = gr.Markdown()
                session = gr.State()
                live.stream(webcam_frame, [live, session], [live_view, live_text, session], stream_every=0.25, time_limit=120, concurrency_limit=4)
        with gr.Tab("Video"):
            gr.Markdown(
                "Every face tracked through a clip. A person's age is the same in every frame, so the frames' age "
                "distributions are pooled into one: a steadier reading, whose range narrows only as far as the frames "
                "are independent evidence (one face's frames share most of their error, so not far); head pose is "
                "filtered from frame to frame. "
                f"The first {MAX_VIDEO_S} s of a clip are analysed."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    clip = gr.Video(label="Video clip", sources=["upload"], elem_id="video-input")
                    every = gr.Slider(1, 5, value=2, step=1, label="Detect faces every N frames (faster when larger)")
                    clip_run = gr.Button("Analyze", variant="primary")
                with gr.Column(scale=2):
                    clip_status = gr.Markdown()
                    clip_out = gr.Video(label="Tracked faces", elem_id="video-annotated")
                    clip_chart = gr.Plot(label="Age over time: each frame vs fused", show_label=False, elem_id="video-chart")
                    clip_download = gr.File(label="Full result (JSON)")
            clip_run.click(analyze_video, [clip, every], [clip_out, clip_chart, clip_download, clip_status], api_name="analyze_video")
        if (shipped_weights("multilabel")).exists():
            with gr.Tab("Objects"):
                gr.Markdown(
                    "Which of the 20 PASCAL VOC classes are in the photo: the model predicts a distribution over "
                    "the classes (objects present share the mass), trained on a few hundred COCO photos."
                )
                with gr.Row():
                    obj_photo, obj_run = _photo_column(example_photos())
                    with gr.Column(scale=2):
                        obj_named = gr.Markdown()
                        obj_chart = gr.Plot(label="Class distribution", elem_id="class-chart")
                        obj_download = gr.File(label="Full result (JSON)")
                _on_photo(obj_photo, obj_run, analyze_objects, [obj_photo], [obj_chart, obj_named, obj_download])
        if (shipped_weights("seg")).exists():
            with gr.Tab("Street scene"):
                gr.Markdown(
                    "A class for every pixel (11 CamVid street classes). The model predicts a distribution per pixel, "
                    "trained on labels that mix the classes met at each boundary; the uncertainty map is its entropy "
                    "(black: sure, yellow: unsure), which lights up along boundaries and between classes it confuses. It was "
                    "trained on 367 frames of Cambridge streets: on other scenes it can be wrong and still sure."
                )
                with gr.Row():
                    seg_photo, seg_run = _photo_column(scene_photos())
                    with gr.Column(scale=2):
                        seg_status = gr.Markdown()
                        opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Overlay opacity")
                        overlay = gr.Image(label="Classes", type="filepath", elem_id="seg-overlay")
                        legend = gr.HTML()
                        unc = gr.Image(label="Uncertainty (entropy of each pixel's distribution)", type="filepath", elem_id="seg-uncertainty")
                kept = gr.State()
                _on_photo(seg_photo, seg_run, analyze_scene, [seg_photo, opacity], [overlay, unc, legend, kept, seg_status])
                opacity.release(reblend, [kept, opacity], overlay, api_name=False)
    return demo


def main() -> None:
    global _device, _backend
    ap = argparse.ArgumentParser(description="dldl demo app")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    args = ap.parse_args()
    _device, _backend = args.device, args.backend
    threading.Thread(target=_warm_up, name="dldl-warm-up", daemon=True).start()
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share)


demo = build()

if __name__ == "__main__":
    main()
