// The fleet benchmark's Express update server (bench/fleet.py starts it), as the seed
// tutorial's: express on Node's https server, GET /update compares the device's version
// header with the offer as a float and answers the image with res.download, or 304.
//
//     node server.js CERT_PEM KEY_PEM IMAGE VERSION   (prints "listening on PORT")
const fs = require('fs');
const https = require('https');
const crypto = require('crypto');
const express = require('express');

const [certFile, keyFile, image, offered] = process.argv.slice(2);
const credentials = {key: fs.readFileSync(keyFile, 'utf8'), cert: fs.readFileSync(certFile, 'utf8')};
const LAST_VERSION = parseFloat(offered);
const MD5 = crypto.createHash('md5').update(fs.readFileSync(image)).digest('hex');  // as the rig sends x-MD5

const app = express();
let downloadCounter = 0;
app.get('/update', (request, response) => {
    const header = request.header('x-ESP32-version');
    const version = header ? parseFloat(header) : Infinity;
    if (version < LAST_VERSION) {
        response.set('x-MD5', MD5);
        response.status(200).download(image, 'firmware.bin', (err) => {
            if (err) {
                console.error('Problem on download firmware: ', err.message);
            } else {
                downloadCounter++;
            }
        });
    } else {
        response.status(304).send('No update needed!');
    }
});

const server = https.createServer(credentials, app);
server.listen(0, '127.0.0.1', 1024, () => console.log(`listening on ${server.address().port}`));
process.on('SIGTERM', () => { console.log(`${downloadCounter} downloads`); process.exit(0); });
