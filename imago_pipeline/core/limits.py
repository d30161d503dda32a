"""Limits on what an image may be, defined once: the settings default to them and the image functions
fall back to them when called without settings (a test, the command line)."""

# Pillow warns past ~89.5 MP (its own decompression-bomb guard); we refuse at the same size.
MAX_PIXELS = 89_000_000
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
THUMBNAIL_SIZE = 256
OCR_LANGUAGES = "eng+fra"
