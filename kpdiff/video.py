"""Video files in and out with PyAV (FFmpeg), streamed: no frame is written to disk.

- :class:`VideoFile` decodes a video's frames in order, as BGR ``uint8`` arrays ``[H, W, 3]``;
  a stream that cannot be opened, has no video track or breaks in the middle is a one-line
  :class:`~kpdiff.errors.KpdiffInputError` naming the file (and the frame).
- :class:`StreamedFrames` serves the frames of one video to
  :class:`~kpdiff.data.clips.TopDownClipDataset` by name (``"<video>/000012.jpg"``), decoding
  forward and keeping only a sliding window, so that a video of any length is read in bounded
  memory when its clips are read in key-frame order.
- :func:`write_video` writes frames as an H.264 MP4 (``yuv420p``, which browsers play) or a GIF,
  atomically.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from kpdiff.errors import KpdiffInputError
from kpdiff.io import atomic_path

__all__ = ["StreamedFrames", "VideoFile", "frame_name", "write_video"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
"""File suffixes read as videos; FFmpeg would otherwise guess a format for any file (it reads a
text file as ANSI art)."""


def frame_name(video: str, index: int) -> str:
    """``"<video>/<index:06d>.jpg"``: how the frames of a video file are named in annotations
    and box files (PoseTrack's layout), although no such file is written."""
    return f"{video}/{index:06d}.jpg"


class VideoFile:
    """A video file's frames, decoded in order with PyAV.

    Args:
        path: the video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``, …).

    Attributes:
        path: the file; ``fps``: its average frame rate (``30.0`` when unknown);
        num_frames: the number of frames (counted from the stream's packets when the container
            does not say).

    Raises:
        KpdiffInputError: a missing file, a suffix that is not a video's, a file FFmpeg cannot
            open, no video stream, no frame.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise KpdiffInputError(f"video: {self.path} does not exist")
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise KpdiffInputError(
                f"video: {self.path} is neither a folder of frames nor a video file (expected "
                f"one of {', '.join(VIDEO_SUFFIXES)})"
            )
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise KpdiffInputError(f"video: {self.path} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate
                self.fps = float(rate) if rate else 30.0
                self.num_frames = int(stream.frames) or sum(
                    1 for packet in container.demux(stream) if packet.size
                )
        except av.error.FFmpegError as err:
            raise KpdiffInputError(
                f"video: {self.path} cannot be decoded ({_reason(err)})"
            ) from None
        if self.num_frames == 0:
            raise KpdiffInputError(f"video: {self.path} has no frames")

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        """The frames in order, BGR ``uint8`` ``[H, W, 3]``.

        Raises:
            KpdiffInputError: a frame that cannot be decoded, naming the file and the frame.
        """
        import av

        index = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="bgr24")
                    index += 1
        except av.error.FFmpegError as err:
            raise KpdiffInputError(
                f"video: {self.path}: frame {index} cannot be decoded ({_reason(err)})"
            ) from None


def _reason(err: Exception) -> str:
    return " ".join(str(getattr(err, "strerror", None) or err).split())[:160]


class StreamedFrames:
    """The frames of one :class:`VideoFile` by name, decoded forward in a sliding window.

    ``get(frame_name(video, i))`` returns frame ``i``; frames more than ``window`` behind the
    newest one asked for are dropped, so reading clips in key-frame order keeps at most
    ``window + 1`` frames in memory. Asking for a dropped frame restarts the decoding.

    Args:
        video: the file; ``name``: the video's name in the frame names.
        window: frames kept behind the newest. Default ``16`` (≥ 2δ of any preset).
    """

    def __init__(self, video: VideoFile, name: str, *, window: int = 16) -> None:
        self.video, self.name, self.window = video, name, window
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._decoder: Iterator[np.ndarray] | None = None
        self._next = 0
        self.restarts = 0

    def names(self) -> list[str]:
        """The frame names, in order."""
        return [frame_name(self.name, i) for i in range(len(self.video))]

    def get(self, path: str) -> np.ndarray:
        """The BGR frame called ``path`` (``"<video>/000012.jpg"``, any leading folders)."""
        index = self._index(path)
        if index in self._frames:
            return self._frames[index]
        if index < self._next:  # dropped already: decode again from the start
            self._decoder, self._next, self.restarts = None, 0, self.restarts + 1
            self._frames.clear()
        if self._decoder is None:
            self._decoder = iter(self.video)
        while self._next <= index:
            frame = next(self._decoder, None)
            if frame is None:
                raise KpdiffInputError(
                    f"video: {self.video.path} ended after {self._next} frames, "
                    f"{len(self.video)} expected"
                )
            self._frames[self._next] = frame
            self._next += 1
            while self._frames and next(iter(self._frames)) < self._next - 1 - self.window:
                self._frames.popitem(last=False)
        return self._frames[index]

    def _index(self, path: str) -> int:
        folder, _, file = str(path).replace("\\", "/").rpartition("/")
        stem = file.rsplit(".", 1)[0]
        if not folder.endswith(self.name) or not stem.isdigit():
            raise KpdiffInputError(f"video: {path} is not a frame of {self.video.path}")
        index = int(stem)
        if not 0 <= index < len(self.video):
            raise KpdiffInputError(
                f"video: frame {index} asked for; {self.video.path} has {len(self.video)}"
            )
        return index


def write_video(
    images: Sequence[np.ndarray] | Iterator[np.ndarray],
    path: str | os.PathLike[str],
    *,
    fps: float = 10.0,
) -> Path:
    """Write BGR ``uint8`` frames ``[H, W, 3]`` (all of one size) as ``.mp4`` or ``.gif``.

    MP4 is H.264 in ``yuv420p`` (odd sizes are cropped by one pixel), which browsers play; GIF
    loops forever. Written atomically: a failure leaves no file.

    Args:
        images: the frames, in order (a list or any iterator).
        path: the target ``.mp4`` or ``.gif``.
        fps: frames per second. Default ``10``.

    Raises:
        KpdiffInputError: another suffix, no frame, frames of different sizes, ``fps <= 0``.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise KpdiffInputError(f"path: expected a .gif or .mp4 file, got {path}")
    if not fps > 0:
        raise KpdiffInputError(f"fps: expected a number > 0, got {fps!r}")
    frames = iter(images)
    first = next(frames, None)
    if first is None:
        raise KpdiffInputError(f"images: no frame to write to {path}")
    h, w = first.shape[:2]
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            from PIL import Image

            pil = [Image.fromarray(np.ascontiguousarray(first[..., ::-1]))]
            for image in frames:
                _check_size(image, (h, w))
                pil.append(Image.fromarray(np.ascontiguousarray(image[..., ::-1])))
            pil[0].save(
                tmp, format="GIF", save_all=True, append_images=pil[1:],
                duration=int(1000 / fps), loop=0,
            )  # fmt: skip
            return path
        eh, ew = h - h % 2, w - w % 2  # yuv420p needs even sizes
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = ew, eh, "yuv420p"
            for image in _chain(first, frames):
                _check_size(image, (h, w))
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:eh, :ew]), "bgr24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return path


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _check_size(image: np.ndarray, size: tuple[int, int]) -> None:
    if image.shape[:2] != size or image.ndim != 3 or image.shape[2] != 3:
        raise KpdiffInputError(
            f"images: expected frames of {size[1]}x{size[0]} BGR like the first, got shape "
            f"{list(image.shape)}"
        )
