// The dashboard's built files, written by `npm run build` (controller/ui/vite.config.ts).
// Do not edit: `make ui` rewrites it.
[
    Asset {
        path: "assets/index-0MOi2hrB.js",
        etag: "\"d85a7b37e26f6ee0f1d9\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-0MOi2hrB.js")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-0MOi2hrB.js.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-0MOi2hrB.js.br"))),
    },
    Asset {
        path: "assets/index-DENlYDLv.css",
        etag: "\"ac4dcddf7cb5707a33da\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-DENlYDLv.css")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-DENlYDLv.css.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-DENlYDLv.css.br"))),
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
        etag: "\"9d63569cbddc0343dd74\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.br"))),
    },
]
