"""Text for the AI utility endpoints: fetch a page safely, extract what a person reads, and the offline
summary and task-draft heuristics. Independent of FastAPI, so the same functions serve tests and endpoints."""
