"""`nmt serve`: translation over HTTP, with dynamic batching and a small web page.

- `engine.Engine`: the models, loaded once, translating a list of lines with one set of options
  exactly as `nmt translate` does (same encoding, batching, search and detokenization).
- `batcher.Batcher`: concurrent requests wait a few milliseconds in a bounded queue and are
  translated together, one model call per set of options; a full queue answers 503.
- `app`: the Starlette application (`POST /translate`, `GET /languages`, `GET /health`,
  `GET /`) and `run` (uvicorn; SIGTERM finishes the requests in flight).
- `native`: nmt's own request schema; `libre` (with `markup`, text and HTML segments): the
  LibreTranslate API.
- `guards`: body size and arrival time, JSON or form decoding, API keys, the rate limit.
- `page.html`: the web page (plain HTML and JavaScript, no external resources).

Starlette and uvicorn (the `serve` extra) are imported by `app` only.
"""
