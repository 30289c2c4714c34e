// The example app `npm start` serves: a plain (req, res) listener, as Express or Connect apps are.
export default function hello(req, res) {
  res.setHeader('content-type', 'text/plain');
  res.end(`Hello from worker ${process.pid}\n`);
}
