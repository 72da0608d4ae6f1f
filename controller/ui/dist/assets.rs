// The dashboard's built files, written by `npm run build` (controller/ui/vite.config.ts).
// Do not edit: `make ui` rewrites it.
[
    Asset {
        path: "assets/index-B4v0W4jv.css",
        etag: "\"8aa6d09788ca3932b010\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-B4v0W4jv.css")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-B4v0W4jv.css.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-B4v0W4jv.css.br"))),
    },
    Asset {
        path: "assets/index-BI1iPaMb.js",
        etag: "\"bcfa9e04847a211ebaf8\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BI1iPaMb.js")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BI1iPaMb.js.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BI1iPaMb.js.br"))),
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
        etag: "\"630d15feeffc80a0cfe1\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.br"))),
    },
]
