"""One module per action type. Each turns a definition's inputs into outbound requests and
their answers into outputs; persistence and ordering stay in :mod:`shared.engine`."""
