"""Files in and out: TSV rows, images and base64, atomic writes."""
