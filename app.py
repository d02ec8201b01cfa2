"""Painter studio: `python app.py` serves it on http://127.0.0.1:7860 (see --help)."""

from painter.ui.app import main

if __name__ == "__main__":
    main()
