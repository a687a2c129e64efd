"""A lean WebRTC load client: aiortc for ICE and DTLS only, SRTP moved by hand."""
