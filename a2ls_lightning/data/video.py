"""Recording episodes as video: frames from the task's camera, written as MP4 (or GIF where no encoder exists).

Frames are rendered from the simulator (``physics.render``) at the recording's own size, whatever the agent
observes (state vector, or small pixel frames), one frame at the episode's start and one per agent step, so a
video of an episode of ``T`` agent steps has ``T + 1`` frames. MP4 needs ``imageio`` with ``imageio-ffmpeg`` (which
ships its own ffmpeg: ``pip install "a2ls_lightning[video]"``); without them the video is a GIF written with Pillow
(a dependency of matplotlib), and one line says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from a2ls_lightning.files import atomic_write


class VideoRecorder:
    """Collects ``[H, W, 3]`` uint8 frames rendered from an environment's camera.

    Args:
        size: frame height and width in pixels.
        fps: frames per second of the written file.
    """

    def __init__(self, size: int = 256, fps: int = 30) -> None:
        self.size = int(size)
        self.fps = int(fps)
        self.frames: list[np.ndarray] = []

    def capture(self, env: Any) -> None:
        """Render one frame of ``env`` (a :class:`~a2ls_lightning.data.envs.DMCEnv`) from its camera."""
        adapter = env.adapter
        frame = adapter.physics.render(self.size, self.size, camera_id=adapter.camera_id)
        self.frames.append(np.ascontiguousarray(frame, dtype=np.uint8))

    def save(self, path: str | Path) -> Path:
        """Write the frames to ``path`` (MP4 when ``path`` ends in ``.mp4`` and an encoder exists, else GIF);
        returns the path written (its suffix is ``.gif`` after a fallback)."""
        path = Path(path)
        if not self.frames:
            raise ValueError(f"video {path}: no frames were recorded")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".mp4":
            if _mp4_writer_available():
                return self._save_mp4(path)
            path = path.with_suffix(".gif")
            print(f"a2ls: no MP4 encoder (pip install imageio imageio-ffmpeg); writing a GIF instead: {path}",
                  file=sys.stderr)
        return self._save_gif(path)

    def _save_mp4(self, path: Path) -> Path:
        import imageio.v2 as imageio

        # imageio-ffmpeg streams to a named file: write beside the target, then rename it crash-safe.
        tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        writer = imageio.get_writer(tmp, fps=self.fps, codec="libx264", quality=7, macro_block_size=1,
                                    ffmpeg_log_level="error")
        try:
            for frame in self.frames:
                writer.append_data(frame)
        finally:
            writer.close()
        atomic_write(path, lambda handle: handle.write(tmp.read_bytes()))
        tmp.unlink(missing_ok=True)
        return path

    def _save_gif(self, path: Path) -> Path:
        from PIL import Image

        images = [Image.fromarray(frame) for frame in self.frames]
        duration = max(1, round(1000 / self.fps))

        def write(handle: Any) -> None:
            images[0].save(handle, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)

        atomic_write(path, write)
        return path


def _mp4_writer_available() -> bool:
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - missing package or missing binary: fall back to GIF
        return False
    return True


def count_frames(path: str | Path) -> int:
    """Frames in a video written by :class:`VideoRecorder` (MP4 through imageio, GIF through Pillow)."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as image:
            return int(image.n_frames)
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()
