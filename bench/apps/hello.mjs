// bench workload `hello`: the smallest useful response, a 12-byte body on a keep-alive connection.
export default function hello(req, res) {
  res.setHeader('content-type', 'text/plain');
  res.end('Hello world\n');
}
