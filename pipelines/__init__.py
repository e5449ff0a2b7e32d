"""Ready AI stages, one module each; ``voice-engine serve --pipeline NAME`` picks one."""
