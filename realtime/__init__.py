"""stylecam realtime."""
import os as _os

# Windows: OpenCV's default camera backend (Media Foundation) can take many seconds to open a camera with its
# hardware transforms on (opencv/opencv#17687); off unless the user set it. It concerns Media Foundation only
# (cameras here: OpenCV opens video files with FFmpeg first).
_os.environ.setdefault("OPENCV_VIDEOIO_MSMF_ENABLE_HW_TRANSFORMS", "0")
