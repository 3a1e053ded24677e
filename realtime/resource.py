"""The one base of sources, segmenters and sinks: something to ``close()``, usable in ``with``."""


class Resource:
    def close(self) -> None:
        """Release what the object holds (files, devices, models); safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
