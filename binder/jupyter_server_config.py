# Serve the Panel apps inside JupyterLab (binder / JupyterHub) via jupyter-server-proxy:
# the launcher shows "neurotwin explorer", which runs `panel serve` on a free port behind the proxy.
c.ServerProxy.servers = {
    "neurotwin-explorer": {
        "command": ["panel", "serve", "apps/explorer.py", "apps/montage.py", "apps/fit.py",
                    "--port", "{port}", "--allow-websocket-origin", "*",
                    "--prefix", "{base_url}neurotwin-explorer"],
        "absolute_url": True,
        "timeout": 60,
        "launcher_entry": {"title": "neurotwin explorer"},
    }
}
