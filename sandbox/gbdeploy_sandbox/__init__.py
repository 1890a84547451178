"""Real and stand-in parts for tests and the demo sandbox: part of gbdeploy's API, like
`invoke.MockContext` or `fabric.testing`. Each talks only to 127.0.0.1 and temporary directories."""
