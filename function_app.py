"""Composition root: one FunctionApp, one blueprint per concern, nothing else."""

import azure.functions as func

from functions import callbacks, health, polling, runs, workflows

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (workflows.bp, runs.bp, callbacks.bp, polling.bp, health.bp):
    app.register_functions(blueprint)
