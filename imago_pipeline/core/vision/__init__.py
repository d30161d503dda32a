"""Vision providers: a description and tags for an image, and summaries and task drafts for the AI endpoints,
from a remote model or computed locally."""
