"""Reading and writing video with PyAV, whose wheels carry their own FFmpeg (no system download).

Frames come out upright: a clip's display-rotation metadata (phones record
portrait video as landscape frames plus a rotation) is applied to each frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".gif", ".ogv"}


class VideoReadError(ValueError):
    """A video that cannot be read: a one-line reason that names the file."""


@dataclass(frozen=True)
class Frame:
    index: int  # 0, 1, 2, ... in decoding order
    time: float  # seconds from the start
    image: Image.Image  # RGB, upright


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # as the container states it; 0 when it does not say
    width: int  # of the upright frames
    height: int


def _upright(frame, image: Image.Image) -> Image.Image:
    rotation = round(getattr(frame, "rotation", 0) or 0) % 360
    # The display matrix turns the decoded frame counter-clockwise by ``rotation`` degrees, as PIL does.
    return image.rotate(rotation, expand=True) if rotation else image


def read_video(path: str | os.PathLike) -> tuple[VideoInfo, Iterator[Frame]]:
    """The clip's facts and an iterator over its upright frames.

    Raises ``VideoReadError`` when the file is missing, is not a video or holds
    no video stream; a clip without a single decodable frame raises it from the iterator.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoReadError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: holds no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    width, height = stream.codec_context.width, stream.codec_context.height
    info = VideoInfo(float(rate), int(stream.frames or 0), width, height)

    def frames() -> Iterator[Frame]:
        n = 0
        try:
            for frame in container.decode(stream):
                image = _upright(frame, frame.to_image())
                time = float(frame.time) if frame.time is not None else n / float(rate)
                yield Frame(n, time, image)
                n += 1
        except av.error.FFmpegError as exc:
            if n == 0:
                raise VideoReadError(f"{path}: could not decode a frame ({exc})") from None
            # a clip cut short (a truncated download): keep the frames read so far
        finally:
            container.close()
        if n == 0:
            raise VideoReadError(f"{path}: holds no frames")

    iterator = frames()
    first = next(iterator, None)  # fails now, not halfway through the caller's work
    if first is None:
        raise VideoReadError(f"{path}: holds no frames")
    if (first.image.width, first.image.height) != (width, height):
        info = VideoInfo(info.fps, info.frames, first.image.width, first.image.height)

    def with_first() -> Iterator[Frame]:
        yield first
        yield from iterator

    return info, with_first()


class VideoWriter:
    """H.264 MP4 (yuv420p, plays in every browser) written frame by frame; sizes are made even."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        import av

        self.size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23", "preset": "veryfast"}

    def write(self, image: Image.Image) -> None:
        import av

        if image.size != self.size:  # an odd side loses its last row or column
            image = image.crop((0, 0, *self.size))
        frame = av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
