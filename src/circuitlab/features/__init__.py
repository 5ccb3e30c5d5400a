"""Feature dashboards and the text corpora they (and transcoder training) stream."""
