// The framing layer (length-prefixed frames, envelopes, the wire's errors)
// is its own small module, LoupeFraming, so it can be fuzzed without the TLS
// stack; everything that imports LoupeWire sees it as before.
@_exported import LoupeFraming
