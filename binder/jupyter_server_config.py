# Serve the Panel dashboards inside JupyterLab (binder / JupyterHub) via jupyter-server-proxy:
# the launcher shows "neurotwin explorer", which runs `neurotwin serve` (a wrapper of `panel serve`
# that serves every app the package registers) on a free port behind the proxy.
# binder/postBuild copies this file to ~/.jupyter/; on JupyterHub put it in the same place (or in
# {sys.prefix}/etc/jupyter/).
c.ServerProxy.servers = {
    "neurotwin-explorer": {
        "command": ["neurotwin", "serve", "--port", "{port}", "--allow-websocket-origin", "*",
                    "--prefix", "{base_url}neurotwin-explorer"],
        "absolute_url": True,
        "timeout": 120,
        "launcher_entry": {"title": "neurotwin explorer"},
    }
}
