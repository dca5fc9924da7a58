"""Live audio over ``WS /stream``: the protocol, stream audio, detections and the session."""
