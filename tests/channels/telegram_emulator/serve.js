// Starts the telegram-test-api EMULATOR of the Telegram Bot API for tests/channels, with
// two patches so that python-telegram-bot accepts its answers:
//   1. getMe lacks `is_bot` (PTB's User requires it): added as true;
//   2. the messages a bot sends come back dated in milliseconds (PTB reads seconds).
// Both are patched where every answer passes, in the module that adds res.sendResult,
// before the server module reads it. It also gets the voice additions of voice.js (files,
// getFile, sendVoice), which the emulator lacks, placed before its own routes.
// Usage: node serve.js PORT; prints "listening" when up.
'use strict';

const sendResultModule = require('telegram-test-api/lib/modules/sendResult');

const originalSendResult = sendResultModule.sendResult;

function patchAnswer(path, answer) {
  if (!answer || typeof answer !== 'object' || !answer.result) {
    return answer;
  }
  const { result } = answer;
  if (/\/getMe$/.test(path)) {
    result.is_bot = true;
  }
  if (typeof result.date === 'number' && result.date > 1e11) {
    result.date = Math.floor(result.date / 1000);
  }
  return answer;
}

sendResultModule.sendResult = (req, res, next) => {
  originalSendResult(req, res, () => {
    const send = res.sendResult;
    res.sendResult = (answer) => send(patchAnswer(req.path, answer));
    next();
  });
};

const routesModule = require('telegram-test-api/lib/routes/index');
const { voiceRoutes } = require('./voice');

routesModule.routes.unshift(voiceRoutes);

const TelegramServer = require('telegram-test-api');

const port = Number(process.argv[2]);
const server = new TelegramServer({ port, host: '127.0.0.1' });
server.start().then(() => {
  process.stdout.write('listening\n');
});
process.on('SIGTERM', () => {
  server.stop().then(() => process.exit(0));
});
