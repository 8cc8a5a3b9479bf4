// The seed tutorial's HTTPS update server (shared/seeds: the Express app whose sketch the
// reference sketch makes correct), its /update handler as published: it reads
// x-esp8266-version, which no ESP32 sends, and answers 304 when the header is missing.
// Changed for the tests only: the port (any free one), the certificate and firmware paths
// from the command line, and one JSON line per answered request on stdout (the evidence).
//
//     NODE_PATH=<folder with express> node seed_server.js CERT_PEM KEY_PEM FIRMWARE
//     (prints "listening on PORT")
const fs = require('fs');
const https = require('https');
const express = require('express');

const [certFile, keyFile, firmware] = process.argv.slice(2);
const credentials = {key: fs.readFileSync(keyFile, 'utf8'), cert: fs.readFileSync(certFile, 'utf8')};

const app = express();
app.use((request, response, next) => {
    response.on('finish', () => console.log(JSON.stringify({
        method: request.method, path: request.path, status: response.statusCode,
        'x-esp8266-version': request.header('x-esp8266-version') ?? null,
        'x-ESP32-version': request.header('x-ESP32-version') ?? null,
    })));
    next();
});

let downloadCounter = 1;
const LAST_VERSION = 0.3;
app.get('/update', (request, response) => {
    const version = (request.header("x-esp8266-version"))?parseFloat(request.header("x-esp8266-version")):Infinity;

    if (version<LAST_VERSION){
        // If you need an update go here
        response.status(200).download(firmware, 'httpUpdateNew.bin', (err)=>{
            if (err) {
                console.error("Problem on download firmware: ", err)
            }else{
                downloadCounter++;
            }
        });
    }else{
        response.status(304).send('No update needed!')
    }
});

const server = https.createServer(credentials, app);
server.listen(0, '127.0.0.1', () => console.log(`listening on ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
