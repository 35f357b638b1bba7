"""The web dashboard at `/` of resc's HTTP server (off unless asked for): pages in
static/ (HTML, CSS and a small script written here, no build step, no CDN) over a JSON
API under /dashboard/api (app). What it shows is read by views from resc.ops and the
daemon's metrics, with their recent history kept by history and the listener channel's
messages by live; the changes it makes to failed lists are in actions; who may look and
act is checked by access. The commands compose it into the HTTP server (resc.server);
it may import resc.server, resc.ops and every layer below them."""
