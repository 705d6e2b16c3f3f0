"""Video files in and out with PyAV: H.264 MP4 and GIF written atomically and read back frame
for frame, frames served by name from a bounded sliding window, damaged videos named."""

from __future__ import annotations

import numpy as np
import pytest

from kpdiff.errors import KpdiffInputError
from kpdiff.video import StreamedFrames, VideoFile, frame_name, write_video


def frames(n: int = 12, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """Frames whose brightness encodes their index (survives lossy coding)."""
    return [np.full((*size, 3), 10 + 20 * i, np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    return write_video(frames(), tmp_path_factory.mktemp("v") / "clip.mp4", fps=25)


def test_mp4_is_h264_and_reads_back_frame_for_frame(mp4):
    import av

    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
    video = VideoFile(mp4)
    assert len(video) == 12 and video.fps == pytest.approx(25)
    decoded = list(video)
    assert len(decoded) == 12 and decoded[0].shape == (48, 64, 3)
    means = [float(f.mean()) for f in decoded]
    np.testing.assert_allclose(means, [10 + 20 * i for i in range(12)], atol=6)  # YUV round trip


def test_gif_and_odd_sizes(tmp_path):
    from PIL import Image

    gif = write_video(frames(4, (31, 45)), tmp_path / "a.gif")
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size == (45, 31)
    odd = VideoFile(write_video(frames(3, (31, 45)), tmp_path / "odd.mp4"))
    assert next(iter(odd)).shape == (30, 44, 3)  # yuv420p: cropped to even sizes


def test_streamed_frames_keep_a_bounded_window(mp4):
    streamed = StreamedFrames(VideoFile(mp4), "clip", window=4)
    assert streamed.names()[:2] == ["clip/000000.jpg", "clip/000001.jpg"]
    for key in range(12):  # clips of δ = 2 in key-frame order, edges clamped
        for i in range(max(key - 2, 0), min(key + 3, 12)):
            frame = streamed.get("/" + frame_name("clip", i))
            assert abs(float(frame.mean()) - (10 + 20 * i)) < 6
            assert len(streamed._frames) <= 5
    assert streamed.restarts == 0
    streamed.get("clip/000000.jpg")  # behind the window: decoded again from the start
    assert streamed.restarts == 1
    with pytest.raises(KpdiffInputError, match="frame 12"):
        streamed.get("clip/000012.jpg")
    with pytest.raises(KpdiffInputError, match="not a frame"):
        streamed.get("other/000001.jpg")


def test_damaged_videos_are_named(mp4, tmp_path):
    for name, data in [
        ("empty.mp4", b""),
        ("text.mp4", b"not a video at all\n" * 40),
        ("cut.mp4", mp4.read_bytes()[: mp4.stat().st_size // 3]),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(KpdiffInputError) as err:
            VideoFile(path)
            list(VideoFile(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(KpdiffInputError, match="neither a folder"):
        VideoFile(tmp_path / "notes.txt")


def test_write_video_refuses_bad_input(tmp_path):
    with pytest.raises(KpdiffInputError, match="no frame"):
        write_video([], tmp_path / "a.mp4")
    with pytest.raises(KpdiffInputError, match="like the first"):
        write_video([frames(1)[0], np.zeros((10, 10, 3), np.uint8)], tmp_path / "a.mp4")
    with pytest.raises(KpdiffInputError, match=r"\.gif or \.mp4"):
        write_video(frames(2), tmp_path / "a.avi")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
