"""The one-command night: scan a raw directory, build masters, calibrate and stack lights."""
