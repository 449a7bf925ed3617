"""Serving: the OpenAI-compatible server (`mimo serve`) and the terminal clients (`mimo generate`,
`mimo chat`), all over `mimo.engine`."""
