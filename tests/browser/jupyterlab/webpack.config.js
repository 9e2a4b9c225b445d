// Builds index.js into build/ (bundle.js and its chunks), and with
// @jupyterlab/builder copies each extension's settings schemas and themes to
// build/schemas and build/themes, where labapp.py tells LabServerApp to look.
// Development mode without source maps: the fastest build (no minifier); the
// bundle is only ever served to a local test browser.
const path = require('path');
const crypto = require('crypto');
const webpack = require('webpack');
const { Build } = require('@jupyterlab/builder');
const data = require('./package.json');

// Loaders of this age ask for md4, which OpenSSL 3 no longer offers.
const createHash = crypto.createHash;
crypto.createHash = algorithm => createHash(algorithm === 'md4' ? 'sha256' : algorithm);

const out = path.join(__dirname, 'build');
const assets = Build.ensureAssets({
  packageNames: data.jupyterlab.extensions,
  output: out,
  hashFunction: 'sha256'
});

const svgInCss = { loader: 'svg-url-loader', options: { encoding: 'none', limit: 10000 } };

module.exports = [
  {
    entry: './index.js',
    output: { path: out, filename: 'bundle.js', hashFunction: 'sha256' },
    bail: true,
    mode: 'development',
    devtool: false,
    performance: { hints: false },
    module: {
      rules: [
        { test: /\.css$/, use: ['style-loader', 'css-loader'] },
        { test: /\.html$/, use: 'file-loader' },
        { test: /\.md$/, use: 'raw-loader' },
        { test: /\.(jpg|png|gif)$/, use: 'file-loader' },
        { test: /\.(woff2?|ttf)(\?v=\d+\.\d+\.\d+)?$/, type: 'asset/inline' },
        { test: /\.eot(\?v=\d+\.\d+\.\d+)?$/, use: 'file-loader' },
        { test: /\.svg(\?v=\d+\.\d+\.\d+)?$/, issuer: /\.css$/, use: svgInCss },
        { test: /\.svg(\?v=\d+\.\d+\.\d+)?$/, issuer: /\.js$/, use: 'raw-loader' }
      ]
    },
    plugins: [
      new webpack.DefinePlugin({
        // Some dependencies read process.env / process.cwd() in the browser.
        'process.env': '{}',
        process: { cwd: () => '/' }
      })
    ]
  }
].concat(assets);
