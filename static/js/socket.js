// The Socket.IO client as an ES module, for every page that talks to the server.
// socket.io-client 4.8.x ships an ESM build (socket.io.esm.min.js) whose minifier
// renamed the binary-attachment key "_placeholder" (socketio/socket.io#5215): a
// frame's JPEG then reaches python-socketio as {"et": true, "num": 0} instead of
// bytes. The UMD build is correct; loaded as a module it sets globalThis.io.
import "/vendor/socket.io.min.js";

export const { io } = globalThis;
