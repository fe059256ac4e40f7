"""hs-bench: end-to-end latency, floor, ingest, memory and overlap benchmark of the Header Service."""
