"""The dashboard every node serves at `/ui/` (docs/dashboard.md): static files packaged here
(`static/`: HTML, one stylesheet, plain JavaScript modules, no build step, nothing fetched
from elsewhere) and the router that serves them with a strict Content-Security-Policy. The
page reads the REST API and the live event stream with the operator's token."""
