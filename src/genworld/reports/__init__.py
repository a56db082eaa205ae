"""Reports: Markdown, JSON and plots written from finished results (above training)."""
