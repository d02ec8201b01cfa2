"""The Gradio studio: style presets, PNG metadata, the model manager and the app itself."""
