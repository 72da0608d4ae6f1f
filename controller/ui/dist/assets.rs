// The dashboard's built files, written by `npm run build` (controller/ui/vite.config.ts).
// Do not edit: `make ui` rewrites it.
[
    Asset {
        path: "assets/index-BKLVguB-.css",
        etag: "\"af4892e1a96ec4375cfa\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BKLVguB-.css")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BKLVguB-.css.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-BKLVguB-.css.br"))),
    },
    Asset {
        path: "assets/index-DpZ80h9M.js",
        etag: "\"d74a7e99689bb85af5ad\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-DpZ80h9M.js")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-DpZ80h9M.js.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/assets/index-DpZ80h9M.js.br"))),
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
        etag: "\"dff04fbe7b211c276b38\"",
        body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html")),
        gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.gz"))),
        br: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/index.html.br"))),
    },
]
