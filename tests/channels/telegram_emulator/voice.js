// Voice additions to the telegram-test-api EMULATOR, which has no files: a file store,
// the Bot API's getFile and file download, sendVoice (multipart, as python-telegram-bot
// uploads it), and one route for the test client to put a user's voice note in the store.
//   POST /storeFile {data: BASE64}        -> {ok, result: {file_id, file_unique_id, file_size}}
//   /bot<token>/getFile {file_id}         -> {ok, result: {file_id, ..., file_path}}
//   GET /file/bot<token>/<file_path>      -> the bytes
//   /bot<token>/sendVoice (multipart)     -> a bot message with `voice`, kept like sendMessage's
'use strict';

const express = require('express');

const files = new Map(); // file_id -> Buffer
let nextFile = 1;

function storeFile(data) {
  const fileId = `file-${nextFile}`;
  nextFile += 1;
  files.set(fileId, data);
  return { file_id: fileId, file_unique_id: `u${fileId}`, file_size: data.length };
}

// The parts of a multipart/form-data body: {name: {data: Buffer, filename}}.
function multipartParts(body, contentType) {
  const match = /boundary="?([^";]+)"?/i.exec(contentType || '');
  const parts = {};
  if (!match) {
    return parts;
  }
  const delimiter = Buffer.from(`--${match[1]}`);
  let start = body.indexOf(delimiter);
  while (start !== -1) {
    const next = body.indexOf(delimiter, start + delimiter.length);
    if (next === -1) {
      break;
    }
    const part = body.subarray(start + delimiter.length + 2, next - 2); // CRLFs around it
    const headerEnd = part.indexOf('\r\n\r\n');
    if (headerEnd !== -1) {
      const headers = part.subarray(0, headerEnd).toString('utf8');
      const name = /name="([^"]*)"/i.exec(headers);
      const filename = /filename="([^"]*)"/i.exec(headers);
      if (name) {
        parts[name[1]] = {
          data: part.subarray(headerEnd + 4),
          filename: filename ? filename[1] : null,
        };
      }
    }
    start = next;
  }
  return parts;
}

function fail(res, code, description) {
  res.status(code).json({ ok: false, error_code: code, description });
}

function voiceRoutes(app, telegramServer) {
  app.post('/storeFile', (req, res) => {
    res.sendResult({ ok: true, result: storeFile(Buffer.from(req.body.data, 'base64')) });
  });

  app.all('/bot:token/getFile', (req, res) => {
    const fileId = (req.body && req.body.file_id) || req.query.file_id;
    const data = files.get(fileId);
    if (!data) {
      fail(res, 400, 'Bad Request: invalid file_id');
      return;
    }
    res.sendResult({
      ok: true,
      result: {
        file_id: fileId, file_unique_id: `u${fileId}`, file_size: data.length, file_path: `voice/${fileId}.oga`,
      },
    });
  });

  app.get('/file/bot:token/voice/:name', (req, res) => {
    const data = files.get(req.params.name.replace(/\.oga$/, ''));
    if (!data) {
      fail(res, 404, 'Not Found');
      return;
    }
    res.type('audio/ogg').send(data);
  });

  app.post(
    '/bot:token/sendVoice',
    express.raw({ type: 'multipart/form-data', limit: '20mb' }),
    (req, res) => {
      const parts = multipartParts(req.body, req.headers['content-type']);
      if (!parts.voice || !parts.chat_id) {
        fail(res, 400, 'Bad Request: sendVoice needs chat_id and voice (as a file)');
        return;
      }
      const voice = { ...storeFile(parts.voice.data), duration: 1, mime_type: 'audio/ogg' };
      const message = { chat_id: parts.chat_id.data.toString('utf8'), voice };
      const result = telegramServer.addBotMessage(message, req.params.token);
      res.sendResult({ ok: true, result });
    },
  );
}

module.exports = { voiceRoutes };
