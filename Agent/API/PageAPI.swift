import Foundation
import HTTPTypes
import Hummingbird
import LoupeCapture
import LoupeImaging
import LoupeStorage
import LoupeVision
import LoupeWire
import NIOCore

/// The Label & Train page itself: its HTML, CSS and JavaScript, compiled
/// into the binary and served open (it signs in through `AccessAPI`).
public struct PageAPI: Sendable {
    public init() {}

    /// The page's files: path → (MIME type, bytes).
    static let assets: [String: (type: String, bytes: [UInt8])] = [
        "/": ("text/html; charset=utf-8", PackageResources.index_html),
        "/index.html": ("text/html; charset=utf-8", PackageResources.index_html),
        "/app.css": ("text/css; charset=utf-8", PackageResources.app_css),
        "/app.js": ("text/javascript; charset=utf-8", PackageResources.app_js),
        "/editor.js": ("text/javascript; charset=utf-8", PackageResources.editor_js),
        "/recipe.js": ("text/javascript; charset=utf-8", PackageResources.recipe_js),
    ]

    public func register(on routes: AgentRoutes) {
        for (path, asset) in Self.assets {
            // The security headers (CSP, nosniff, …) come from SecurityHeadersMiddleware, as on every response.
            routes.get(RouterPath(path), .open) { _, _ in
                Response(
                    status: .ok, headers: [.contentType: asset.type, .cacheControl: "no-cache"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: asset.bytes)))
            }
        }
    }
}
