"""Vision providers: a description and tags for an image, from a remote model or computed locally."""
