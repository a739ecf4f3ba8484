// Preloaded (node --require) into the Node processes the tests start, so a
// server that listens on "all interfaces" (server-everything calls
// app.listen(PORT) with no host) binds 127.0.0.1 instead: tests serve on
// loopback only.
'use strict';
const net = require('net');
const listen = net.Server.prototype.listen;
const isPort = (v) => typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v));
net.Server.prototype.listen = function (...args) {
  if (isPort(args[0]) && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  } else if (args[0] && typeof args[0] === 'object' && !args[0]._handle && args[0].fd === undefined && !args[0].path && args[0].host === undefined) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
