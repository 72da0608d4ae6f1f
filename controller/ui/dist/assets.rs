// The dashboard's built files, written by `npm run build` (controller/ui/vite.config.ts).
// Do not edit: `make ui` rewrites it.
[
    Asset {
        path: "assets/index-B_5X6pU5.js",
        etag: "\"59e41410475ed73f3021\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-B_5X6pU5.js")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-B_5X6pU5.js.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-B_5X6pU5.js.br"))),
    },
    Asset {
        path: "assets/index-BbVxy4sC.css",
        etag: "\"bfa1fa5a409ec4386224\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BbVxy4sC.css")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BbVxy4sC.css.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BbVxy4sC.css.br"))),
    },
    Asset {
        path: "assets/xterm-DLuoa74B.css",
        etag: "\"576a27f394aa96680dbd\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/xterm-DLuoa74B.css")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/xterm-DLuoa74B.css.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/xterm-DLuoa74B.css.br"))),
    },
    Asset {
        path: "assets/xterm-DudyGoOt.js",
        etag: "\"847a281b271bfe4e47ab\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/xterm-DudyGoOt.js")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/xterm-DudyGoOt.js.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/xterm-DudyGoOt.js.br"))),
    },
    Asset {
        path: "favicon.svg",
        etag: "\"1ffb0cc6945757f21f65\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/favicon.svg")),
        gzip: None,
        br: None,
    },
    Asset {
        path: "index.html",
        etag: "\"7a2e1b6a0bccd8f7fbfc\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.br"))),
    },
]
