"""Using a model: the Painter pipeline, the EasyNLP-style pipeline, batch TSV prediction and the CLI."""
